"""The parts of ``mailgw.imap.structure``: header blocks, addresses, transfer encodings."""
