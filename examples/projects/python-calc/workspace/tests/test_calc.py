import unittest

from calc import calc


class CalcTest(unittest.TestCase):
    def test_add(self):
        self.assertEqual(calc("2", "+", "3"), 5)

    def test_divide(self):
        self.assertEqual(calc("7", "/", "2"), 3.5)

    def test_unknown_operator(self):
        with self.assertRaises(ValueError):
            calc("1", "%", "2")
