"""Benchmarks: the gateway against a bare aiohttp pass-through, the fake
upstream called directly, and LiteLLM's proxy, all in one run.

    python -m bench            # the full run (about 10 minutes)
    python -m bench --quick    # one repetition, short loads, smaller scale figures

See bench/README.md for what is measured and the latest table.
"""
