"""``router-stream send`` and ``tail``: the console side of the command.

Internal: the public surface is :mod:`router_stream` (its ``__all__``); names here may change.
"""
