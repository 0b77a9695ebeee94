"""The pipeline's stages, in the order data flows through them: ``prepare`` (raw corpus → segments, with the
offline quickstart corpus), ``seed`` (the seed pairs), ``train`` (backward and forward models), ``augment`` (the
backward model writes an instruction for each segment), ``scorers`` and ``curate`` (the forward model rates each
pair into tiers), ``export`` and ``export_card`` (the final dataset and its card). Each is a command of its own;
humpback/loop.py walks them as one run.
"""
