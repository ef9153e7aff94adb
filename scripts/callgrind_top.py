#!/usr/bin/env python3
"""Top functions of a callgrind dump, per request: used by scripts/callgrind-http.sh.

  callgrind_top.py DUMP REQUESTS TOP

Prints the TOP functions by inclusive and by self instructions (Ir), each divided by
REQUESTS.

Why not callgrind_annotate's own list: a dump taken after `callgrind_control -z`
holds, for each call that was in progress at the zeroing (the thread start and the
runtime's worker loop), a call line with `calls=0`; callgrind_annotate 3.19 counts
those as the caller's self cost, so its self ranking starts with a dozen frames at
100%. Here a cost line after a `calls=` line is always a call cost: it goes to the
caller's inclusive figure only.

Inclusive figures are computed as callgrind_annotate computes them: self cost plus
the cost of the calls the function makes to other functions. Callgrind names
recursive activations apart (`f'2`), so a recursive function's inclusive cost counts
its nested activations again, and can exceed the total. Functions whose inclusive
cost is the whole dump (thread start, the runtime's scheduler loop) are left out of
the inclusive list, which says how many.
"""

import re
import sys
from collections import defaultdict

NAME = re.compile(r"^\((\d+)\)(?: (.*))?$")


def parse(path: str):
    names: dict[str, dict[str, str]] = defaultdict(dict)  # kind -> id -> name

    def name(kind: str, value: str) -> str:
        m = NAME.match(value)
        if not m:
            return value
        ident, text = m.groups()
        if text is not None:
            names[kind][ident] = text
            return text
        return names[kind].get(ident, f"({ident})")

    self_cost: dict[str, int] = defaultdict(int)
    call_cost: dict[str, int] = defaultdict(int)
    total = None
    fn = None
    cfn = None
    pending_call = False
    with open(path, encoding="utf-8", errors="replace") as f:
        for raw in f:
            line = raw.rstrip("\n")
            if not line or line.startswith("#"):
                continue
            head, sep, rest = line.partition("=")
            if sep and re.fullmatch(r"[a-z]+", head):
                if head == "fn":
                    fn = name("fn", rest)
                elif head == "cfn":
                    cfn = name("fn", rest)
                elif head in ("fl", "fi", "fe", "cfi", "cfl"):
                    name("fl", rest)
                elif head in ("ob", "cob"):
                    name("ob", rest)
                elif head == "calls":
                    pending_call = True
                continue
            if ":" in line.split()[0]:
                key, _, value = line.partition(":")
                if key in ("totals", "summary") and total is None:
                    total = int(value.split()[0])
                continue
            fields = line.split()
            if len(fields) < 2 or fn is None:
                continue
            cost = int(fields[1])
            if pending_call:
                if cfn != fn:
                    call_cost[fn] += cost
                pending_call = False
            else:
                self_cost[fn] += cost
    if total is None:
        total = sum(self_cost.values())
    inclusive = {f: self_cost.get(f, 0) + call_cost.get(f, 0) for f in set(self_cost) | set(call_cost)}
    return total, self_cost, inclusive


def main() -> None:
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    path, n, top = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    total, self_cost, inclusive = parse(path)
    print(f"total {total / n:,.0f} Ir per request ({total:,} over {n})")
    whole = [f for f, c in inclusive.items() if c >= total]
    rest = sorted(((c, f) for f, c in inclusive.items() if c < total), reverse=True)
    print(f"\nby inclusive Ir per request ({len(whole)} functions spanning the whole dump left out):")
    for cost, f in rest[:top]:
        print(f"{cost / n:>12,.0f}  {cost / total:>6.1%}  {f[:140]}")
    print("\nby self Ir per request:")
    for cost, f in sorted(((c, f) for f, c in self_cost.items()), reverse=True)[:top]:
        print(f"{cost / n:>12,.0f}  {cost / total:>6.1%}  {f[:140]}")


if __name__ == "__main__":
    main()
