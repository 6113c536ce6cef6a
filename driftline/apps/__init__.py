"""What a person runs: the ``driftline`` command line and its sub-commands, replay, the demo,
status and the HTML report. Each builds on the pipeline (``driftline.streams``) and the
platform (``driftline.platform``)."""
