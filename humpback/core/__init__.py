"""The plumbing every stage stands on, below the pipeline rather than in it: typed configs and their errors
(``config``), record schemas and atomic writes (``records``), named extension points (``registry``), the run
folder and its manifest (``runs``) with the typed stage results it records (``results``), model resolution
(``models``), prompt templates (``prompts``), shards and stable ids (``shards``), the chunked model step that
augment, curate, eval and rest share (``model_step``), output locks (``locks``), fault points (``faults``) and
the terminal's progress and console (``progress``, ``console``).
"""
