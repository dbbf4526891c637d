"""Worker processes: ``[mailgw] workers = N`` serves every protocol from N processes, one store."""
