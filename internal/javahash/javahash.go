// Package javahash computes Java's String.hashCode in Go, for the places
// where msgmesh must agree with Java clients byte for byte: RocketMQ's
// SelectMessageQueueByHash picks a message queue with it, and RocketMQ
// brokers filter tags by it.
package javahash

import "unicode/utf16"

// String returns Java's s.hashCode() for the Java string holding the same
// text as s: s[0]·31^(n−1) + … + s[n−1] over its UTF-16 code units, in
// int32 arithmetic that overflows as Java's does. s is read as UTF-8; a
// byte sequence that is not UTF-8 counts as U+FFFD, as Java's UTF-8
// decoder makes it.
func String(s string) int32 {
	var h int32
	for _, r := range s {
		if r >= 0x10000 {
			hi, lo := utf16.EncodeRune(r)
			h = 31*h + int32(hi)
			h = 31*h + int32(lo)
			continue
		}
		h = 31*h + int32(r)
	}
	return h
}

// Index is Java's SelectMessageQueueByHash choice among n queues for a key
// whose hash is h: Math.abs(h % n). n must be positive.
func Index(h int32, n int) int {
	v := h % int32(n)
	if v < 0 {
		v = -v
	}
	return int(v)
}
