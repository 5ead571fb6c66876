"""The TPM boot's checks, judged from the guest probe's record and the host's own counts.

T1 the TPM answers through /dev/tpmrm0; T2 both hardware RNGs are registered with the
kernel; T3 both delivered random bytes to the guest during the boot (counted on the host,
which the image cannot forge) and the guest shows who took them into the pool; T4
trousers' tcsd is not running. Pure functions: records in, checks out.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class TpmCheck:
    id: str
    name: str
    passed: bool
    detail: str
    evidence: dict[str, Any] = field(default_factory=dict)


def _devices(probe: dict[str, Any]) -> tuple[str | None, str | None]:
    available = probe.get("rng_available") or []
    virtio = next((d for d in available if d.startswith("virtio_rng")), None)
    tpm = next((d for d in available if d.startswith("tpm-rng")), None)
    return virtio, tpm


def tpm_answers(probe: dict[str, Any]) -> TpmCheck:
    rm = probe.get("tpmrm0") or {}
    ok = bool(rm.get("answers"))
    detail = (f"/dev/tpmrm0 answered TPM2_GetCapability (manufacturer {rm.get('manufacturer')!r})" if ok
              else f"/dev/tpmrm0 did not answer: {rm.get('error') or rm.get('rc')}")
    return TpmCheck("T1", "the TPM answers", ok, detail, {"tpmrm0": rm, "tpm_chips": probe.get("tpm_chips")})


def both_registered(probe: dict[str, Any]) -> TpmCheck:
    virtio, tpm = _devices(probe)
    ok = bool(virtio and tpm)
    missing = [n for n, d in (("the board's RNG (virtio_rng)", virtio), ("the TPM (tpm-rng)", tpm)) if not d]
    detail = (f"registered: {' '.join(probe.get('rng_available') or [])}; current {probe.get('rng_current')}" if ok
              else f"not registered: {', '.join(missing)}")
    return TpmCheck("T2", "both hardware RNGs registered", ok, detail,
                    {"rng_available": probe.get("rng_available"), "rng_current": probe.get("rng_current")})


def takers(probe: dict[str, Any], device: str | None) -> list[str]:
    """Who in the guest takes ``device``'s bytes into the pool: the kernel's fill thread and rngd
    for the current hwrng, the TPM feeder for the TPM."""
    found = []
    if device and device == probe.get("rng_current"):
        found.append("hw_random core (current hwrng)")
        if any("/dev/hwrng" in r.get("devices", []) for r in probe.get("rngd") or []):
            found.append("rngd on /dev/hwrng")
    feeder = probe.get("feeder") or {}
    if device and device.startswith("tpm-rng") and feeder.get("credited_bits"):
        found.append(f"entropi-tpm-feed ({feeder['credited_bits']} bits credited)")
    return found


def both_feed(probe: dict[str, Any], counts: dict[str, Any]) -> TpmCheck:
    virtio, tpm = _devices(probe)
    rng_bytes = int((counts.get("virtio-rng") or {}).get("delivered_bytes", 0))
    tpm_bytes = int((counts.get("tpm") or {}).get("random_bytes", 0))
    feeder = probe.get("feeder") or {}
    problems = []
    if not rng_bytes or not takers(probe, virtio):
        problems.append(f"the board's RNG delivered {rng_bytes} bytes, taken by {takers(probe, virtio) or 'nobody'}")
    if not tpm_bytes or not takers(probe, tpm):
        problems.append(f"the TPM delivered {tpm_bytes} random bytes, taken by {takers(probe, tpm) or 'nobody'}")
    elif int(feeder.get("bytes", 0)) > tpm_bytes:
        problems.append(f"the feeder claims {feeder['bytes']} bytes, the host counted {tpm_bytes}: not from this TPM")
    detail = "; ".join(problems) or (f"board RNG {rng_bytes} bytes ({', '.join(takers(probe, virtio))}); "
                                     f"TPM {tpm_bytes} bytes ({', '.join(takers(probe, tpm))})")
    return TpmCheck("T3", "bits from both RNGs reach the kernel", not problems, detail,
                    {"host_counts": counts, "feeder": feeder, "rngd": probe.get("rngd")})


def trousers_off(probe: dict[str, Any]) -> TpmCheck:
    units = probe.get("units") or {}
    active = [u for u in ("trousers.service", "tcsd.service")
              if (units.get(u) or {}).get("ActiveState") in ("active", "activating")]
    ok = not active and not probe.get("tcsd_running")
    states = {u: (units.get(u) or {}).get("LoadState") for u in ("trousers.service", "tcsd.service")}
    detail = f"tcsd not running ({states})" if ok else f"tcsd runs: {active or 'a tcsd process'}"
    return TpmCheck("T4", "trousers (tcsd) stays off", ok, detail, {"units": states})


def judge(probe: dict[str, Any], counts: dict[str, Any]) -> list[dict[str, Any]]:
    return [asdict(c) for c in (tpm_answers(probe), both_registered(probe), both_feed(probe, counts),
                                trousers_off(probe))]
