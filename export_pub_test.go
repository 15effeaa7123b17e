package kavari

// Test-only access for the publisher and registry tests of kavari_test.

// HandlerNames returns the names (as written in the kavari_handler header)
// of the handlers registered on r for msg's type, in registration order.
func HandlerNames(r *Registry, msg any) []string {
	info, _, err := messageValue(msg)
	if err != nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	rt := r.byType[info.typ]
	if rt == nil {
		return nil
	}
	var out []string
	for _, b := range rt.bindings {
		out = append(out, b.name)
	}
	return out
}
