package twopc

// AbortReason returns why tx was aborted ("" if it was not, or is not
// known). Drivers use it to answer outcome queries.
func (c *Coordinator) AbortReason(tx string) string {
	if f, ok := c.finishedTx(tx); ok && !f.committed {
		return f.reason
	}
	return ""
}
