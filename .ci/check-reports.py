"""Fail unless every named test tier left a JUnit report with tests that ran and passed."""

import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def main() -> int:
    folder, tiers = Path(sys.argv[1]), sys.argv[2:]
    total_passed = total_failed = total_skipped = 0
    ok = True
    for tier in tiers:
        report = folder / f"{tier}.xml"
        if not report.exists():
            print(f"tier {tier}: NO REPORT ({report}) - the tier did not run")
            ok = False
            continue
        root = ET.parse(report).getroot()
        suites = [root] if root.tag == "testsuite" else list(root)
        tests = sum(int(s.get("tests", 0)) for s in suites)
        failed = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
        skipped = sum(int(s.get("skipped", 0)) for s in suites)
        passed = tests - failed - skipped
        print(f"tier {tier}: {passed} passed, {failed} failed, {skipped} skipped")
        if tests == 0 or passed == 0:
            print(f"tier {tier}: no test ran")
            ok = False
        ok = ok and failed == 0
        total_passed += passed
        total_failed += failed
        total_skipped += skipped
    print(f"{total_passed} passed, {total_failed} failed, {total_skipped} skipped")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
