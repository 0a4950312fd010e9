#!/usr/bin/env python3
"""Load a running `tidings serve` over loopback: CONCURRENCY keep-alive clients send TOTAL
one-sentence /v1/translate requests (de/ru/cs pool) with BEAM; prints requests/s and p50/p99.

Usage: python3 scripts/loadgen.py PORT CONCURRENCY TOTAL BEAM   (standard library only)
"""
import http.client, json, sys, threading, time
host, port = "127.0.0.1", int(sys.argv[1])
conc, total, beam = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
pool = [
 ("de","Der Bundestag hat am 22. Mai über das Gesetz abgestimmt."),
 ("de","Die Opposition kritisierte den Entwurf scharf."),
 ("ru","Правительство утвердило новый бюджет на следующий год."),
 ("cs","Česká národní banka ponechala úrokové sazby beze změny."),
 ("de","In Berlin demonstrierten tausende Menschen gegen die Reform."),
 ("ru","Президент провёл встречу с губернаторами регионов."),
]
lat, errors = [], []
lock = threading.Lock()
counter = [0]
def worker():
    c = http.client.HTTPConnection(host, port, timeout=120)
    while True:
        with lock:
            i = counter[0]; counter[0] += 1
        if i >= total: break
        lang, text = pool[i % len(pool)]
        body = json.dumps({"text": text, "source": lang, "beam": beam})
        t = time.perf_counter()
        c.request("POST", "/v1/translate", body, {"content-type": "application/json"})
        r = c.getresponse(); r.read()
        d = time.perf_counter() - t
        with lock:
            lat.append(d)
            if r.status != 200: errors.append(r.status)
start = time.perf_counter()
ts = [threading.Thread(target=worker) for _ in range(conc)]
[t.start() for t in ts]; [t.join() for t in ts]
wall = time.perf_counter() - start
lat.sort()
q = lambda p: lat[min(len(lat)-1, int(p*len(lat)))]*1000
print(f"requests={len(lat)} concurrency={conc} beam={beam} wall={wall:.2f}s rps={len(lat)/wall:.1f} p50={q(0.5):.1f}ms p99={q(0.99):.1f}ms max={lat[-1]*1000:.1f}ms errors={len(errors)}")
