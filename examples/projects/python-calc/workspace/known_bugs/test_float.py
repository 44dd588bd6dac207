import unittest

from calc import calc


class FloatTest(unittest.TestCase):
    def test_integers(self):
        self.assertEqual(calc("2", "+", "2"), 4)

    def test_tenths_add_up(self):
        # a known bug: binary floating point makes this 0.30000000000000004
        self.assertEqual(calc("0.1", "+", "0.2"), 0.3)
