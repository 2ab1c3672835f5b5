"""The `ductile <noun> <verb>` command line. Heavy modules are imported inside commands so
`ductile --help` stays fast."""
