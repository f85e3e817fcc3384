"""Demo corpora: stroke fonts, random writers, a sentence grammar and speech synthesisers, and the builders
(`corpora`) behind `python -m model.prepare`. model.data reads what they write, like any other corpus."""
