"""Pure tensor maths for alignment algorithms.

Every module in this package imports only ``torch`` and the standard library
(no transformers / deepspeed / numpy), so it can be unit-tested on CPU in
milliseconds.  Import submodules explicitly, e.g.::

    from rlhf_cli.algos.preference import DPO_LOSSES
"""
