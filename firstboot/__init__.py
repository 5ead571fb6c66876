"""The first-boot element: what runs on the Pi (programs and units, installed by the build),
with its README and tests. A package only so that pytest imports firstboot/tests by name."""
