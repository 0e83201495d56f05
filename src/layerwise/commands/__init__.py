"""Run logic, one module per command: each exposes its options (a strict pydantic ``CommandOptions``, keys = the
Python keywords, which the command line spells as flags) and ``run(options)``, which checks, loads, computes
through the library and writes the run folder. ``cli`` only declares flags and calls ``run``; a Python user
calls the same ``run``:

    from layerwise.commands import analyze
    analyze.run(analyze.AnalyzeOptions(model="minilm", data="sentences", out="runs/analyze"))

The modules import torch only inside ``run``, so a bad option is answered before anything heavy loads.
"""
