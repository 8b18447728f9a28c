"""Shortening or lengthening an iteration-based schedule in a config."""


def scale_schedule(cfg, iters: int):
    """Run ``iters`` iterations, scaling scheduler ranges, val and checkpoint intervals to fit.

    Every ``param_scheduler`` entry's ``begin``/``end`` (and ``warmup_iters``, where a scheduler
    has one) is scaled by ``iters / max_iters``, so warm-up and decay keep their proportions.
    """
    ratio = iters / cfg.train_cfg.max_iters

    def scale(n, least=1):
        return max(least, round(n * ratio))

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
            sched.warmup_iters = scale(sched.warmup_iters)
    hooks = cfg.get('default_hooks', {})
    for name in ('checkpoint', 'logger'):
        if name in hooks and hooks[name].get('interval'):
            hooks[name].interval = scale(hooks[name].interval)
