/* Mini guest entry: PVH (32-bit flat, paging off, EBX = hvm_start_info) into long mode,
 * the AP real-mode trampoline, and the interrupt stubs. Page tables are static data so
 * boot runs no table-building loop (every ring-0 instruction is expensive under emulation). */
#include "guest.h"

    .section .note.Xen, "a"
    .balign 4
    .long 4                 /* name size: "Xen\0" */
    .long 4                 /* desc size */
    .long 18                /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .balign 4
    .long pvh_start
    .balign 4

    .section .text.boot, "ax"
    .code32
    .globl pvh_start
pvh_start:
    cli
    cld
    mov %ebx, %esi          /* hvm_start_info, kept across the mode switch */
    lgdt gdt_ptr
    mov %cr4, %eax
    or $0x20, %eax          /* PAE */
    mov %eax, %cr4
    mov $pml4, %eax
    mov %eax, %cr3
    mov $0xc0000080, %ecx   /* EFER.LME */
    rdmsr
    or $0x100, %eax
    wrmsr
    mov %cr0, %eax
    or $0x80000001, %eax    /* PG | PE */
    and $0x9fffffff, %eax   /* caches on */
    mov %eax, %cr0
    ljmp $KERNEL_CS, $start64

    .code64
start64:
    mov $KERNEL_DS, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    xor %eax, %eax
    mov %eax, %fs
    mov %eax, %gs
    lea boot_stack_top(%rip), %rsp
    mov %esi, %edi          /* zero-extends: arg 0 = start_info */
    call kmain
1:  cli
    hlt
    jmp 1b

/* Application processors: entered by SIPI in real mode at AP_TRAMPOLINE; this block is
 * copied there by the BSP. It goes straight to long mode with the BSP's page tables. */
    .code16
    .globl ap_trampoline, ap_trampoline_end
ap_trampoline:
    cli
    xor %ax, %ax
    mov %ax, %ds
    lgdtl (AP_TRAMPOLINE + ap_gdt_ptr - ap_trampoline)
    mov $0x20, %eax         /* PAE */
    mov %eax, %cr4
    mov $pml4, %eax
    mov %eax, %cr3
    mov $0xc0000080, %ecx
    rdmsr
    or $0x100, %eax
    wrmsr
    mov $0x80000011, %eax   /* PG | ET | PE */
    mov %eax, %cr0
    ljmpl $KERNEL_CS, $ap_start64
    .balign 8
ap_gdt_ptr:
    .word gdt_end - gdt - 1
    .long gdt
ap_trampoline_end:

    .code64
ap_start64:
    mov $KERNEL_DS, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    xor %eax, %eax
    mov %eax, %fs
    mov %eax, %gs
    /* Our stack is picked by LAPIC ID, so APs started together need no lock. */
    mov $LAPIC_BASE, %rdx
    mov 0x20(%rdx), %eax
    shr $24, %eax
    and $(MAX_CPUS - 1), %eax
    mov %eax, %edi
    inc %eax
    shl $AP_STACK_SHIFT, %rax
    lea ap_stacks(%rip), %rsp
    add %rax, %rsp
    call ap_main
2:  cli
    hlt
    jmp 2b

/* Interrupt stubs: push a dummy error code where the CPU does not, then the vector. */
    .text
.macro ISR vec, has_err, name
    .balign 16
isr_\name:
    .if \has_err == 0
    push $0
    .endif
    push $\vec
    jmp isr_common
.endm

    .globl isr_table
isr_common:
    push %rax
    push %rcx
    push %rdx
    push %rbx
    push %rbp
    push %rsi
    push %rdi
    push %r8
    push %r9
    push %r10
    push %r11
    push %r12
    push %r13
    push %r14
    push %r15
    mov %rsp, %rdi
    call isr_dispatch
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %r11
    pop %r10
    pop %r9
    pop %r8
    pop %rdi
    pop %rsi
    pop %rbp
    pop %rbx
    pop %rdx
    pop %rcx
    pop %rax
    add $16, %rsp
    iretq

    ISR 0, 0, 0
    ISR 1, 0, 1
    ISR 2, 0, 2
    ISR 3, 0, 3
    ISR 4, 0, 4
    ISR 5, 0, 5
    ISR 6, 0, 6
    ISR 7, 0, 7
    ISR 8, 1, 8
    ISR 9, 0, 9
    ISR 10, 1, 10
    ISR 11, 1, 11
    ISR 12, 1, 12
    ISR 13, 1, 13
    ISR 14, 1, 14
    ISR 15, 0, 15
    ISR 16, 0, 16
    ISR 17, 1, 17
    ISR 18, 0, 18
    ISR 19, 0, 19
    ISR 20, 0, 20
    ISR 21, 1, 21
    ISR 22, 0, 22
    ISR 23, 0, 23
    ISR 24, 0, 24
    ISR 25, 0, 25
    ISR 26, 0, 26
    ISR 27, 0, 27
    ISR 28, 0, 28
    ISR 29, 0, 29
    ISR 30, 1, 30
    ISR 31, 0, 31
    ISR VEC_SERIAL, 0, serial
    ISR VEC_PLATFORM, 0, platform
    ISR VEC_TIMER, 0, timer
    ISR VEC_IPI, 0, ipi
    ISR VEC_VIRTIO, 0, virtio
    ISR VEC_SPURIOUS, 0, spurious

    .section .rodata
    .balign 8
isr_table:                  /* (vector, stub) pairs, ended by vector 0xffff */
    .irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .quad \v, isr_\v
    .endr
    .quad VEC_SERIAL, isr_serial
    .quad VEC_PLATFORM, isr_platform
    .quad VEC_TIMER, isr_timer
    .quad VEC_IPI, isr_ipi
    .quad VEC_VIRTIO, isr_virtio
    .quad VEC_SPURIOUS, isr_spurious
    .quad 0xffff, 0

    .data
    .balign 16
gdt:
    .quad 0
    .quad 0x00af9a000000ffff    /* 0x08: 64-bit code */
    .quad 0x00cf92000000ffff    /* 0x10: data */
gdt_end:
gdt_ptr:
    .word gdt_end - gdt - 1
    .quad gdt

/* Identity map of the low 4 GiB with 2 MiB pages (RAM below the MMIO hole, LAPIC, IOAPIC). */
    .section .pagetables, "aw"
    .balign 4096
    .globl pml4
pml4:
    .quad pdpt + 0x3
    .fill 511, 8, 0
pdpt:
    .quad pd + 0x3
    .quad pd + 0x1000 + 0x3
    .quad pd + 0x2000 + 0x3
    .quad pd + 0x3000 + 0x3
    .fill 508, 8, 0
pd:
    .set i, 0
    .rept 2048
    .quad (i << 21) + 0x83
    .set i, i + 1
    .endr

    .bss
    .balign 4096
    .globl boot_stack_top
boot_stack:
    .skip 16384
boot_stack_top:
    .globl ap_stacks
ap_stacks:
    .skip (MAX_CPUS << AP_STACK_SHIFT)
