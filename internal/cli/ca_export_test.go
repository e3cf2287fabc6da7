package cli

// WriteCAStatus renders `trellis ca status` (table) for golden tests.
var WriteCAStatus = writeCAStatus
