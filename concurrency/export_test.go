package concurrency

// Total reports the slots held across all keys, to prove that every slot
// came back.
func (m *Memory) Total() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.total
}

// Keys reports how many keys have state (a holder or a waiter).
func (m *Memory) Keys() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.keys)
}
