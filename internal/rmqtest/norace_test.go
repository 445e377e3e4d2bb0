//go:build !race

package rmqtest_test

func raceFence() {}
