#!/usr/bin/env python3
"""Prints the spans of `dtx serve --trace stdout` files as one tree per trace.

Usage: scripts/trace-tree.py FILE...  (one JSON span per line, as the
stdout exporter writes them; the files of several processes may be given:
their spans are joined by trace and parent ids).
"""
import json
import sys
from datetime import datetime


def ts(s):
    # 2026-11-30T18:37:01.123456789Z -> datetime (microseconds)
    head, _, frac = s.rstrip("Z").partition(".")
    frac = (frac + "000000")[:6]
    return datetime.fromisoformat(head + "." + frac)


spans = []
for path in sys.argv[1:]:
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                spans.append(json.loads(line))

by_id = {s["SpanContext"]["SpanID"]: s for s in spans}
kids = {}
roots = []
for s in spans:
    p = s["Parent"]["SpanID"]
    if p in by_id:
        kids.setdefault(p, []).append(s)
    else:
        roots.append(s)


def attrs(s):
    out = []
    for a in s.get("Attributes") or []:
        if a["Key"] in ("dtx.node", "dtx.vote", "dtx.record", "dtx.outcome", "dtx.reason"):
            out.append("%s=%s" % (a["Key"][4:], a["Value"]["Value"]))
    return " ".join(out)


def show(s, t0, depth):
    svc = next(a["Value"]["Value"] for a in s["Resource"] if a["Key"] == "service.name")
    start = (ts(s["StartTime"]) - t0).total_seconds() * 1000
    dur = (ts(s["EndTime"]) - ts(s["StartTime"])).total_seconds() * 1000
    print("%-44s %-16s +%7.3fms %7.3fms  %s" % ("  " * depth + s["Name"], svc, start, dur, attrs(s)))
    for k in sorted(kids.get(s["SpanContext"]["SpanID"], []), key=lambda k: ts(k["StartTime"])):
        show(k, t0, depth + 1)


for r in roots:
    print("trace %s (parent %s%s)" % (r["SpanContext"]["TraceID"], r["Parent"]["SpanID"],
                                     ", remote" if r["Parent"]["Remote"] else ""))
    show(r, ts(r["StartTime"]), 0)
