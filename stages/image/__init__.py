"""Working on a disk image: partitions and FAT access, the libguestfs session and its Protocol,
files and systemd units inside the image, the qemu-user chroot."""
