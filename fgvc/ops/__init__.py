"""The iSQRT-COV meta-layer as pure functions with thin modules on top."""

from fgvc.ops.covariance import covariance_pool
from fgvc.ops.isqrt import ISqrtCov, isqrt_cov
from fgvc.ops.sqrtm import sqrtm_newton_schulz
from fgvc.ops.triu import triu_flat_index, triu_vec

__all__ = [
    "ISqrtCov",
    "covariance_pool",
    "isqrt_cov",
    "sqrtm_newton_schulz",
    "triu_flat_index",
    "triu_vec",
]
