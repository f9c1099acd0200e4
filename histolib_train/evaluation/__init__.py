"""``histolib evaluate``: DICE and balanced accuracy of virtual IHC against expert masks."""
