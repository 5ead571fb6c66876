"""Pure text edits of files inside images (config.txt, modules, account files, sshd, rngd):
string in, string out; no I/O, so every rule is unit-tested."""
