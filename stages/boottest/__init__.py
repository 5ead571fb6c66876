"""`invoke boot-test`: boot the output under QEMU, read the guest's evidence, judge the checks."""
