"""minimtl: a from-scratch multi-task CNN framework in NumPy.

Reproduces Rohani, Farsi and Mohamadzadeh, "Deep Multi-task Convolutional
Neural Networks for Efficient Classification of Face Attributes", IJE 36(11), 2023.
"""
__version__ = "0.1.0"
