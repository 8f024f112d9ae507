"""(op family not implemented yet)"""
