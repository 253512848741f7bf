"""What a person uses directly.

    cli.py    the `spa` command line (analyze, prune, convert, demo): every argument checked before TensorFlow loads
    plots.py  channels per group and FLOPs per layer, before and after
    demo.py   the built-in example: a small ResNet trained on Fashion-MNIST (assets/), pruned and converted
"""
