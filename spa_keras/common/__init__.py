"""What every stage shares and no stage owns.

    errors.py   SpaError and its kinds: one actionable line for the user
    console.py  the rich console, progress, and quiet() for chatty libraries
    files.py    model kinds by path, atomic writes, refusing outputs that would replace inputs
    tensors.py  TensorSpec, --input-shape parsing, free dimensions resolved, random batches
    verify.py   comparison of a converted or pruned model's outputs with its source's
"""
