"""The TPM boot's machine: QEMU `-M virt` with a virtio RNG and a TPM 2.0, each counted on the host.

- Disk: virtio-blk over virtio-mmio (a qcow2 overlay; the image stays byte-identical);
  network: virtio-net, user mode, 127.0.0.1:<free port> forwarded to the guest's sshd.
- virtio-rng: QEMU's `rng-egd` backend asks ``hostcount.EgdServer`` for its bytes.
- TPM: an swtpm (TPM 2.0) reached through a virtio serial port, ``hostcount.TpmRelay``
  between QEMU and swtpm's data socket; inside the guest the boot test's `entropi-vtpm`
  hands it to the kernel's vTPM proxy. QEMU's own `tpm-tis-device` (swtpm's control
  socket) is there too, but Debian's arm64 kernels have no driver for it (CONFIG_TCG_TIS
  is off): the probe records that it stays unbound.
- CPU `cortex-a57`: no RNDR instruction, and `dtb-randomness=off`: no `rng-seed` in the
  device tree (QEMU's, credited by the kernel: crng ready at 0.0 s). No seed reaches the
  kernel behind the counters.

QEMU, the swtpms and the counters stop when the ``VirtMachine`` context exits.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from stages.boottest.bootfiles import BootFiles
from stages.boottest.hostcount import EgdServer, TpmRelay
from stages.boottest.machine import Machine
from stages.core.errors import UserError
from stages.core.processes import forget, spawn

PORT_NAME = "org.entropi.tpm"  # the name entropi-vtpm looks for in /sys/class/virtio-ports


def virt_cmdline(original: str) -> str:
    """The image's command line for -M virt: its PL011 serial console, predictable net names."""
    keep = [w for w in original.split() if not w.startswith(("console=", "net.ifnames=", "quiet", "splash"))]
    return " ".join([*keep, "console=ttyAMA0,115200", "net.ifnames=0"])


def swtpm_argv(state: Path, data: Path | None, ctrl: Path, log: Path) -> list[str]:
    """An swtpm (TPM 2.0) with its state in ``state``: a data socket for the relay, or only the
    control socket QEMU's `-tpmdev emulator` uses."""
    argv = ["swtpm", "socket", "--tpm2", "--tpmstate", f"dir={state}", "--ctrl", f"type=unixio,path={ctrl}",
            "--log", f"file={log},level=1", "--terminate"]
    if data is not None:
        argv += ["--server", f"type=unixio,path={data}", "--flags", "not-need-init,startup-clear"]
    return argv


@dataclass
class VirtMachine(Machine):
    """One -M virt boot of ``disk`` with the counted RNG and TPM; ``work`` holds the sockets."""

    work: Path = Path()
    egd: EgdServer | None = None
    relay: TpmRelay | None = None
    helpers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def argv(self) -> list[str]:
        w = self.work
        argv = ["qemu-system-aarch64", "-M", "virt,dtb-randomness=off", "-cpu", "cortex-a57", "-smp", "2", "-m", "1G",
                "-kernel", str(self.files.kernel), "-append", self.files.cmdline,
                "-drive", f"file={self.disk},if=none,id=d0,format=qcow2,cache=writethrough",
                "-device", "virtio-blk-device,drive=d0",
                "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{self.port}-:22",
                "-device", "virtio-net-device,netdev=n0",
                "-chardev", f"socket,id=egd,path={w / 'egd.sock'}", "-object", "rng-egd,id=rng0,chardev=egd",
                "-device", "virtio-rng-device,rng=rng0",
                "-device", "virtio-serial-device", "-chardev", f"socket,id=tpmport,path={w / 'relay.sock'}",
                "-device", f"virtserialport,chardev=tpmport,name={PORT_NAME}",
                "-chardev", f"socket,id=chrtpm,path={w / 'tis-ctrl.sock'}",
                "-tpmdev", "emulator,id=tpm0,chardev=chrtpm", "-device", "tpm-tis-device,tpmdev=tpm0",
                "-display", "none", "-monitor", "none", "-serial", f"file:{self.log}", "-no-reboot"]
        if self.files.initrd:
            argv[argv.index("-append"):argv.index("-append")] = ["-initrd", str(self.files.initrd)]
        return argv

    def __enter__(self) -> VirtMachine:
        w = self.work
        w.mkdir(parents=True, exist_ok=True)
        for name in ("tpm-state", "tis-state"):
            (w / name).mkdir(exist_ok=True)
        self._swtpm(swtpm_argv(w / "tpm-state", w / "swtpm.sock", w / "swtpm-ctrl.sock", w / "swtpm.log"),
                    w / "swtpm.sock")
        self._swtpm(swtpm_argv(w / "tis-state", None, w / "tis-ctrl.sock", w / "swtpm-tis.log"), w / "tis-ctrl.sock")
        self.egd = EgdServer(w / "egd.sock")
        self.relay = TpmRelay(w / "relay.sock", w / "swtpm.sock")
        super().__enter__()
        return self

    def _swtpm(self, argv: list[str], ready: Path) -> None:
        try:
            proc = spawn(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        except FileNotFoundError:
            raise UserError("boot-test --tpm", "swtpm is not installed", hint="run ./ci/setup") from None
        self.helpers.append(proc)
        for _ in range(100):
            if ready.exists() or proc.poll() is not None:
                break
            proc_wait(proc, 0.05)
        if not ready.exists():
            err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr and proc.poll() is not None else ""
            raise UserError("boot-test --tpm", f"swtpm did not start: {err or 'no socket'}",
                            hint="swtpm and swtpm-tools come from ./ci/setup")

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.kill()
        for server in (self.egd, self.relay):
            if server is not None:
                server.close()
        for proc in self.helpers:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            forget(proc)

    def counts(self) -> dict[str, object]:
        """What each device delivered to the guest so far, counted on the host."""
        egd = {"delivered_bytes": self.egd.delivered, "requests": self.egd.requests,
               "error": self.egd.error} if self.egd else {}
        tpm = {**self.relay.summary(), "error": self.relay.error} if self.relay else {}
        return {"virtio-rng": egd, "tpm": tpm}


def proc_wait(proc: subprocess.Popen[bytes], seconds: float) -> None:
    try:
        proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        pass


def virt_files(files: BootFiles) -> BootFiles:
    """The image's kernel and initramfs with the -M virt command line (QEMU makes the device tree)."""
    return BootFiles(files.kernel, files.initrd, files.dtb, virt_cmdline(files.cmdline), files.boot_part)
