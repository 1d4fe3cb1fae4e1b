"""Status codes every Numba kernel returns instead of raising inside its loops.

* ``OK``: all values finite, outputs written;
* ``BAD_INPUT``: a NaN/Inf in the input (outputs partially written);
* ``BAD_STATE``: a NaN/Inf in the incoming state;
* ``BAD_SHAPE``: the array shapes disagree (nothing read or written).
"""
OK, BAD_INPUT, BAD_STATE, BAD_SHAPE = 0, 1, 2, 3
