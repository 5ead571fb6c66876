"""One boot test: prepare the cards' common overlay, boot the cards, judge, write the report."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from stages.boottest import markdown
from stages.boottest.bootfiles import extract_boot_files
from stages.boottest.cards import PROBE_ARGS, Cards, plans, timings
from stages.boottest.checks import Check, not_applicable
from stages.boottest.evidence import Boot
from stages.boottest.machine import card_bytes, card_dir, overlay
from stages.boottest.prepare import Facts, prepare
from stages.boottest.static import config_check
from stages.boottest.verdict import evaluate
from stages.core import progress
from stages.core.errors import UserError
from stages.core.files import remove_tree, sha256_file

CARDS = ("B", "A", "C")


class BootTest:
    def __init__(self, image: Path, arch: str, *, key: Path | None, out_dir: Path, timeout: int = 900,
                 manifest: dict[str, Any] | None = None, grows: bool = True, reset_at_key: str = "",
                 key_count: int = 0, cards: Sequence[str] = CARDS, password_expected: bool | None = None,
                 tamper: bool = True) -> None:
        self.tamper = tamper  # card A's third boot, after its keys were changed behind the guard (check 10)
        self.image, self.arch, self.key, self.out_dir, self.timeout = image, arch, key, out_dir, timeout
        self.manifest = manifest or {}
        self.grows, self.reset_at_key, self.key_count = grows, reset_at_key, key_count
        self.cards, self.password_expected = tuple(cards), password_expected
        self.name = image.name.removesuffix(".img")
        self.work = out_dir / f".boot-{self.name}"

    def _settings_from(self, facts: Facts) -> None:
        """Fill in what an image without a manifest leaves open, from what the image holds."""
        self.arch = self.arch or facts.arch
        if not self.arch:
            raise UserError(str(self.image), "cannot tell the image's architecture (no manifest, no ELF /bin/sh)",
                            hint="boot-test boots Raspberry Pi OS images for arm64 or armhf")
        types = [t["type"] for t in facts.firstboot_config.get("key_types", []) if isinstance(t, dict)]
        self.key_count = self.key_count or len(types)
        self.reset_at_key = self.reset_at_key or (types[-1] if types else "rsa")

    def _boot_cards(self, facts: Facts, prepared: Path, cards_dir: Path,
                    retries: list[dict[str, str]]) -> dict[str, Boot]:
        files = extract_boot_files(self.image, self.arch, self.work / "boot")
        files = replace(files, cmdline=f"{files.cmdline} {PROBE_ARGS}")
        cards = Cards(files, self.arch, facts, key=self.key, out_dir=self.out_dir, name=self.name, work=self.work,
                      timeout=self.timeout, key_count=self.key_count)
        cards.card_bytes = card_bytes(self.image)
        boots: dict[str, Boot] = {}
        for card, plan in plans(self.reset_at_key, self.tamper).items():
            if card in self.cards and (card == "B" or facts.firstboot):
                boots.update(cards.card(prepared, cards_dir, card, plan, retries))
        return boots

    def run(self) -> dict[str, Any]:
        remove_tree(self.work)
        self.work.mkdir(parents=True)
        retries: list[dict[str, str]] = []
        try:
            before = sha256_file(self.image)
            with card_dir(self.work) as cards_dir:
                prepared = cards_dir / "prepared.qcow2"
                overlay(self.image, "raw", prepared, self.image.stat().st_size)  # the cards' common one
                with progress.step("read the image and put the probe on the cards"):
                    facts = prepare(self.image, prepared, self.manifest)
                self._settings_from(facts)
                static = config_check(self.image)
                boots = self._boot_cards(facts, prepared, cards_dir, retries)
            expected = self._password_expected(boots)
            checks = [static, *evaluate(boots, facts, password_expected=expected, grows=self.grows,
                                        key_count=self.key_count)]
            if self.key is None:
                checks = [not_applicable("4", c.name, "no login key given (--key)") if c.number == "4" else c
                          for c in checks]
            checks.append(Check("0", "output unchanged", sha256_file(self.image) == before,
                                "the image stayed byte-identical (cards are qcow2 overlays)"))
        finally:
            remove_tree(self.work)
        return self._report(checks, boots, facts, retries)

    def _password_expected(self, boots: dict[str, Boot]) -> bool:
        if self.password_expected is not None:
            return self.password_expected
        probe = boots["B"].probe if "B" in boots and boots["B"].probe else {}
        return (probe or {}).get("sshd_passwordauthentication") == "yes"

    def _report(self, checks: list[Check], boots: dict[str, Boot], facts: Facts,
                retries: list[dict[str, str]]) -> dict[str, Any]:
        report = {
            "image": str(self.image), "arch": self.arch, "built_by_entropi": bool(self.manifest),
            "passed": all(c.ok is not False for c in checks) and any(c.ok for c in checks),
            "checks": [c.__dict__ for c in checks], "retries": retries, "timings": timings(boots),
            "facts": {k: v for k, v in facts.__dict__.items() if k != "password"},
            "probe": boots["B"].probe if "B" in boots else None,
        }
        path = self.out_dir / f"{self.name}.boot-report.json"
        path.write_text(json.dumps(report, indent=2) + "\n")
        path.with_suffix(".md").write_text(markdown.render(report))
        return report
