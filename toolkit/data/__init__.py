"""The data stage: readers (layouts), images (decode/resize/cache), split (lesion split, audit, manifest),
pipeline (augmented batches for Keras) and demo (the synthetic demo set).

Submodules are imported directly, so that reading and splitting data does not import Keras.
"""
