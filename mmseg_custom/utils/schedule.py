"""Shortening or lengthening an iteration-based schedule in a config."""


def scale_schedule(cfg, iters: int):
    """Run ``iters`` iterations, scaling scheduler ranges, val and checkpoint intervals to fit.

    Every ``param_scheduler`` entry's ``begin``/``end`` (and ``warmup_iters``, where a scheduler
    has one; each entry of a tuple or list such as ``TwoStageWarmupPolyLR``'s ``(500, 1000)``) is
    scaled by ``iters / max_iters``, so warm-up and decay keep their proportions; so are the
    iteration windows of custom hooks (``start_iters``/``end_iters``, numbers or lists of them,
    e.g. ``EoMTMaskAnnealingHook``'s). A value of 0 stays 0; any other stays at least 1.
    """
    ratio = iters / cfg.train_cfg.max_iters

    def scale(n, least=1):
        return max(least, round(n * ratio))

    def scale_any(value):  # a number, or a tuple/list of them (same type back); 0 stays 0
        if isinstance(value, (list, tuple)):
            return type(value)(scale_any(v) for v in value)
        return scale(value, least=0 if value == 0 else 1)

    cfg.train_cfg.max_iters = iters
    if cfg.train_cfg.get('val_interval'):
        cfg.train_cfg.val_interval = scale(cfg.train_cfg.val_interval)
    schedulers = cfg.get('param_scheduler') or []
    for sched in schedulers if isinstance(schedulers, list) else [schedulers]:
        if 'begin' in sched:
            sched.begin = scale(sched.begin, least=0)
        if 'end' in sched:
            sched.end = scale(sched.end)
        if 'warmup_iters' in sched:
            sched.warmup_iters = scale_any(sched.warmup_iters)
    for hook in cfg.get('custom_hooks') or []:
        for key in ('start_iters', 'end_iters'):
            if key in hook:
                hook[key] = scale_any(hook[key])
    hooks = cfg.get('default_hooks', {})
    for name in ('checkpoint', 'logger'):
        if name in hooks and hooks[name].get('interval'):
            hooks[name].interval = scale(hooks[name].interval)
