package ctrlplane

// LeaseSweeps counts the lease sweeps done so far, so that a test can wait
// for one that started after some point instead of sleeping.
func (s *Server) LeaseSweeps() uint64 { return s.sweeps.Load() }
