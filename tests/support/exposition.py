"""A synthetic Prometheus exposition the size of a TGI replica's ``/metrics`` (~2,000 samples,
mostly histogram buckets): what the server-metrics scraper's test and its cost benchmark parse."""


def tgi_sized_exposition() -> str:
    out = ["# TYPE tgi_queue_size gauge", "tgi_queue_size 3",
           "# TYPE tgi_batch_current_size gauge", "tgi_batch_current_size 7"]
    for f in range(20):
        out.append(f"# TYPE tgi_h{f} histogram")
        for k in range(9):
            for le in ("0.001", "0.01", "0.1", "1", "10", "100", "1000", "10000", "+Inf"):
                out.append(f'tgi_h{f}_bucket{{method="m{k}",le="{le}"}} {k}')
            out += [f'tgi_h{f}_sum{{method="m{k}"}} 1.5', f'tgi_h{f}_count{{method="m{k}"}} {k}']
    return "\n".join(out) + "\n"
