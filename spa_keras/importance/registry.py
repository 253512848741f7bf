"""The registry of importance criteria, selectable by name or passed as an instance."""

CRITERIA = {}


def register_criterion(name):
    def wrap(cls):
        CRITERIA[name] = cls
        return cls

    return wrap


def get_criterion(criterion):
    from spa_keras.errors import InputError

    if callable(criterion) and not isinstance(criterion, str):
        return criterion
    try:
        return CRITERIA[str(criterion).lower()]()
    except KeyError:
        raise InputError(f"unknown criterion {criterion!r}; available: {', '.join(sorted(CRITERIA))}") from None
