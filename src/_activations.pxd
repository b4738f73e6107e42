# Activations for the fused gate loops, generic over float/double.
# The float versions are the vectorisable approximations in _fastmath.h (about
# 2 ulp); the double versions are libm's.  All saturate on huge inputs and
# propagate NaN.
from cython cimport floating

cdef extern from "_fastmath.h" nogil:
    float rk_sigmoidf(float x)
    float rk_tanhf(float x)
    double rk_sigmoid(double x)
    double rk_tanh(double x)


cdef inline floating sigmoid(floating x) noexcept nogil:
    if floating is float:
        return rk_sigmoidf(x)
    else:
        return rk_sigmoid(x)


cdef inline floating tanh_(floating x) noexcept nogil:
    if floating is float:
        return rk_tanhf(x)
    else:
        return rk_tanh(x)


cdef inline floating relu(floating x) noexcept nogil:
    # `x > 0 ? x : 0` would turn NaN into 0; keep NaN visible.
    return 0 if x < 0 else x
