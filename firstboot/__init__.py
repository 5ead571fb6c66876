"""The first-boot element: what runs on the Pi (programs and units, installed by the build),
with its README and tests. A package so that pytest imports firstboot/tests, and the tests
the program's package firstboot/entropi_firstboot/, by name."""
