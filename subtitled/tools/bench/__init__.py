"""`subtitled bench`: accuracy, latency and cost of the streaming pipeline on a manifest.

    manifest.py  the TSV of clips and reference transcripts (and translations)
    driver.py    runs the daemon's own ASR stage on a simulated or a real clock
    metrics.py   pure metric code: WER, latency, flicker, BLEU/chrF, percentiles
    report.py    metrics per item and overall; the JSON report and the printed table
    plot.py      the PNG: latency over time and its distribution
    cli.py       the `bench` subcommand
"""
