"""TensorFlow as a compute library (on a GPU when TensorFlow sees one): the one place the core's numerics touch it.

    data.py         (x, y) batches from arrays, tf.data datasets or generators
    calibration.py  model inputs from .npy/.npz files or folders of images (OBSPA's calibration data)
    gradients.py    the loss, its gradients and Hessian-vector products of a Keras model (the gradient criteria)
    obs.py          layer-wise OBS: block errors of removing columns, the least-squares refit of the kept ones
    patches.py      a layer's input as the columns of its weight matrix (im2col) and their streamed moments
    distill.py      inputs optimised to reproduce a network's BatchNorm statistics (data-free OBSPA)
"""
