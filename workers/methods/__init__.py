"""autopeft's modules as peft methods; importing this package registers them with peft."""

from workers.methods.bottleneck import BottleneckConfig, adapter_params
from workers.methods.prefix import KVPrefixConfig, prefix_params

__all__ = ["BottleneckConfig", "KVPrefixConfig", "adapter_params", "prefix_params"]
