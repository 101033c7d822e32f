#!/usr/bin/env python3
"""Compare two pseudofs-survey logs (Linux's first, ours second): print the
files only one kernel has and every file whose lines differ."""
import sys,re
def parse(fn):
    d={};order=[];cur=None
    for l in open(fn,errors='replace'):
        l=l.rstrip('\n')
        if 'SURVEY start' in l or l.startswith('['): continue
        m=re.match(r'^([FD]) (\S+)(.*)$',l)
        if m:
            cur=m.group(2); d[cur]=[l]; order.append(cur)
        elif l.startswith('| ') and cur: d[cur].append(l)
    return d,order
L,lo=parse(sys.argv[1]); O,oo=parse(sys.argv[2])
only_l=[p for p in lo if p not in O]; only_o=[p for p in oo if p not in L]
print("only on Linux:",len(only_l)); [print("  ",p) for p in only_l]
print("only here:",len(only_o)); [print("  ",p) for p in only_o]
for p in lo:
    if p in O and L[p]!=O[p]:
        print("DIFF",p); print("  linux:", " // ".join(L[p])); print("  ours: ", " // ".join(O[p]))
