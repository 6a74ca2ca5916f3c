from .settings import AppConfig, ConfigError

__all__ = ["AppConfig", "ConfigError"]
