"""GA4GH front doors: TES 1.1 (tasks are cryomesh jobs) and DRS 1.5 (datasets and their files)."""
