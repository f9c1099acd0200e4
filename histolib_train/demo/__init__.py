"""``histolib demo``: the whole pipeline on synthetic slides, ending in report.html."""
