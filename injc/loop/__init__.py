"""The experiment loops: they drive the compiler, a trainer and the evals around one another. control.py is
`injc run` (build a window, train to its end, probe, decide the next window's count), cpdt.py is `injc cpdt` (build
each row, train it from a checkpoint, evaluate it, the dependence matrix), external.py trains a window or a row with
the user's own command (`--train-cmd`)."""
