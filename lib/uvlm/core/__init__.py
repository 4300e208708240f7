"""The ground floor: params.yaml and its presets, strict config schemas, errors, file IO, devices and precision, thread and process budgets, the first cell of every notebook."""
