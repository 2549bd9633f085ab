"""GECO's trainable part: the attention head, the KL-OT loss, AdamW and the training loop.

Flow: cached features -> :mod:`.head` (forward/backward) -> :mod:`.loss`
(cosine similarity, dustbin OT layer, KL to the ground-truth plan) ->
:mod:`.optim` (AdamW) -> :mod:`.train` (epochs, validation, checkpoints).
"""
