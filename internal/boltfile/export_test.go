package boltfile

// CreateSuffix is createSuffix, for the external tests.
const CreateSuffix = createSuffix
