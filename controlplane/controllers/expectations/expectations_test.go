package expectations

import "testing"

func TestExpectations(t *testing.T) {
	e := New()
	if !e.Satisfied("a") {
		t.Fatal("an owner without expectations must be satisfied")
	}
	e.Expect("a", 2, 1)
	e.Observe("a", 1, 0)
	if e.Satisfied("a") {
		t.Fatal("satisfied with one creation and one deletion still outstanding")
	}
	e.Observe("a", 1, 1)
	if !e.Satisfied("a") {
		t.Fatal("not satisfied after every creation and deletion was seen")
	}
	e.Expect("b", 1, 0)
	e.Forget("b")
	if !e.Satisfied("b") {
		t.Fatal("a forgotten owner must be satisfied")
	}
	e.Observe("c", 1, 1) // nothing expected: no record appears
	if !e.Satisfied("c") {
		t.Fatal("observations without expectations must not block an owner")
	}
}
