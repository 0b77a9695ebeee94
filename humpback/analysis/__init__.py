"""Looking at what the stages wrote, beside the flow rather than in it: ``stats`` (counts and lengths of any
segments, pairs or scores), ``report`` (one HTML page about a run) and ``style`` (the voice classifier the
``humpback`` scorer adds to its blend). Measuring models against held-out data is humpback/evaluate.
"""
